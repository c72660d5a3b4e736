"""Serves the files of a directory over HTTPS until killed: a test's identity
provider (a JWKS, an OpenID configuration), reached by the node daemons.

usage: serve_https.py DIR CERT KEY ADDRESS PORT
"""
import functools
import http.server
import ssl
import sys

directory, cert, key, address, port = sys.argv[1:6]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
server = http.server.ThreadingHTTPServer((address, int(port)), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
