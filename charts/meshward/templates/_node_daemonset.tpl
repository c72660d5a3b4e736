{{/* The node daemon's DaemonSet; a dict: root (the chart's context), name (of
the DaemonSet, its pods' name label and its ConfigMap), awsIid (whether its nodes
attest with aws_iid). */}}
{{- define "meshward.nodeDaemonSet" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "meshward.labels" $root | nindent 4 }}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ .name }}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      # hitless: the new daemon starts beside the old one (the node ports are
      # shared, SO_REUSEPORT) and takes every new connection once ready; the old
      # one then drains (README: upgrades)
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ .name }}
        meshward.io/dataplane-mode: none
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "15020"
        prometheus.io/path: /stats/prometheus
    spec:
      serviceAccountName: meshward-node
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      # the Workload API recognizes callers by their process (pod cgroup or netns)
      hostPID: true
      priorityClassName: system-node-critical
      terminationGracePeriodSeconds: 30
      nodeSelector:
        kubernetes.io/os: linux
      {{- if $root.Values.attestation.awsIid.enabled }}
      # EC2 nodes (labelled {{ $root.Values.attestation.awsIid.nodeLabel }}) attest with
      # their instance identity document, by meshward-node-aws-iid; the others by {{ $root.Values.attestation.type }}
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - {key: {{ $root.Values.attestation.awsIid.nodeLabel }}, operator: {{ ternary "Exists" "DoesNotExist" .awsIid }}}
      {{- end }}
      tolerations:
      - operator: Exists
      containers:
      - name: node
        {{- include "meshward.imageFields" $root | nindent 8 }}
        args: ["proxy", "run", "-c", "/etc/meshward/proxy.yaml"]
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - name: SPIFFE_ENDPOINT_SOCKET
          value: unix:///run/meshward/sockets/agent.sock
        ports:
        - {name: http-metrics, containerPort: 15020}
        - {name: http-ready, containerPort: 15021}
        readinessProbe:
          # this pod's own daemon: during an upgrade port 15021 is shared with the
          # daemon being replaced, which may answer for it
          exec: {command: [meshward, proxy, ready, --socket, /tmp/meshward-ready.sock]}
          periodSeconds: 5
        livenessProbe:
          tcpSocket: {port: 15021}
          initialDelaySeconds: 30
          periodSeconds: 30
        resources:
          {{- toYaml $root.Values.node.resources | nindent 10 }}
        securityContext:
          # capture rules, TPROXY, SO_MARK: root with NET_ADMIN and NET_RAW only
          runAsUser: 0
          runAsNonRoot: false
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: ["ALL"]
            add: ["NET_ADMIN", "NET_RAW"]
          seccompProfile:
            type: RuntimeDefault
        volumeMounts:
        - {name: config, mountPath: /etc/meshward, readOnly: true}
        - {name: bundle, mountPath: /etc/meshward/bundle, readOnly: true}
        - {name: policies, mountPath: /etc/meshward/policies, readOnly: true}
        - {name: sockets, mountPath: /run/meshward/sockets}
        - {name: data, mountPath: /var/lib/meshward/agent}
        - {name: xtables-lock, mountPath: /run/xtables.lock}
        {{- if .awsIid }}
        {{- else if eq $root.Values.attestation.type "k8s_psat" }}
        - {name: token, mountPath: /var/run/secrets/tokens, readOnly: true}
        {{- else }}
        # this node's key of the join tokens' Secret (add it before the node joins)
        - {name: join-tokens, mountPath: /var/run/secrets/meshward/join-token, subPathExpr: $(NODE_NAME), readOnly: true}
        {{- end }}
        - {name: tmp, mountPath: /tmp}
      volumes:
      - name: config
        configMap: {name: {{ .name }}}
      - name: bundle
        configMap: {name: meshward-bundle, optional: true}
      - name: policies
        configMap: {name: meshward-policies}
      - name: sockets
        hostPath: {path: /run/meshward/sockets, type: DirectoryOrCreate}
      - name: data
        hostPath: {path: /var/lib/meshward/agent, type: DirectoryOrCreate}
      # the lock kube-proxy and aws-node take around iptables changes
      - name: xtables-lock
        hostPath: {path: /run/xtables.lock, type: FileOrCreate}
      {{- if .awsIid }}
      {{- else if eq $root.Values.attestation.type "k8s_psat" }}
      - name: token
        projected:
          sources:
          - serviceAccountToken:
              path: meshward-node
              audience: {{ $root.Values.attestation.k8sPsat.audience }}
              expirationSeconds: {{ $root.Values.attestation.k8sPsat.tokenExpirationSeconds }}
      {{- else }}
      - name: join-tokens
        secret: {secretName: {{ $root.Values.attestation.joinToken.secretName }}}
      {{- end }}
      - name: tmp
        emptyDir: {}
{{- end -}}
