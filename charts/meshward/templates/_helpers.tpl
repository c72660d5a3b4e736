{{/* Helm's labels on every object (never on selectors or pod templates: those
stay the kustomize base's, so either can be read the same way). */}}
{{- define "meshward.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: meshward
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "meshward.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The container's image lines. */}}
{{- define "meshward.imageFields" -}}
image: {{ include "meshward.image" . }}
{{- with .Values.image.pullPolicy }}
imagePullPolicy: {{ . }}
{{- end }}
{{- end -}}

{{/* Checks of values the schema cannot express. */}}
{{- define "meshward.checks" -}}
{{- if and (gt (int .Values.issuer.replicas) 1) (ne .Values.issuer.datastore.type "postgres") -}}
{{- fail "issuer.replicas > 1 needs issuer.datastore.type=postgres: SQLite replicas would each keep their own entries and nodes" -}}
{{- end -}}
{{- if and .Values.federation.bundleEndpoint.enabled (eq .Values.federation.bundleEndpoint.profile "https_web") (not .Values.federation.bundleEndpoint.tlsSecretName) -}}
{{- fail "federation.bundleEndpoint.profile=https_web needs federation.bundleEndpoint.tlsSecretName (a kubernetes.io/tls Secret)" -}}
{{- end -}}
{{- range .Values.federation.federatesWith -}}
{{- if and (eq .bundleEndpointProfile "https_spiffe") (not .trustDomainBundle) -}}
{{- fail (printf "federation.federatesWith %s: https_spiffe needs trustDomainBundle (the endpoint is authenticated with it)" .trustDomain) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The file name of a federated domain's first bundle in the issuer's ConfigMap. */}}
{{- define "meshward.bundleFile" -}}
federated-{{ . | replace "." "-" }}.json
{{- end -}}

{{/* issuer.yaml, as a dict (rendered with toYaml; issuer.config merged over). */}}
{{- define "meshward.issuerConfig" -}}
{{- $c := dict
  "trust_domain" .Values.trustDomain
  "data_dir" "/var/lib/meshward/issuer"
  "agent_listen" "0.0.0.0:8081"
  "health_listen" "0.0.0.0:8080"
  "admin_socket" "/run/meshward/issuer.sock"
  "bundle_configmap" (dict "namespace" .Release.Namespace) -}}
{{- if .Values.issuer.clusterSPIFFEIDs }}{{ $_ := set $c "cluster_spiffe_ids" dict }}{{ end -}}
{{- if .Values.federation.clusterFederatedTrustDomains }}{{ $_ := set $c "cluster_federated_trust_domains" dict }}{{ end -}}
{{- if eq .Values.attestation.type "k8s_psat" -}}
{{- $p := .Values.attestation.k8sPsat -}}
{{- $cluster := dict
  "name" $p.cluster
  "api_server" $p.apiServer
  "api_token_path" "/var/run/secrets/kubernetes.io/serviceaccount/token"
  "api_ca_path" "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
  "audience" (list $p.audience)
  "service_account_allow_list" (list (printf "%s:meshward-node" .Release.Namespace)) -}}
{{- $_ := set $c "k8s_psat" (dict "clusters" (list $cluster)) -}}
{{- end -}}
{{- $iid := .Values.attestation.awsIid -}}
{{- if $iid.enabled -}}
{{- if not $iid.accountIDs -}}
{{- fail "attestation.awsIid.enabled needs attestation.awsIid.accountIDs (the AWS accounts whose instances may attest)" -}}
{{- end -}}
{{- $_ := set $c "aws_iid" (dict "account_ids" $iid.accountIDs "max_document_age" $iid.maxDocumentAge "allow_reattestation" $iid.allowReattestation) -}}
{{- end -}}
{{- $e := .Values.federation.bundleEndpoint -}}
{{- if $e.enabled -}}
{{- $endpoint := dict "listen" (printf "0.0.0.0:%d" (int $e.port)) "refresh_hint" $e.refreshHint "profile" $e.profile -}}
{{- if eq $e.profile "https_web" -}}
{{- $_ := set $endpoint "cert_file" "/etc/meshward/bundle-endpoint-tls/tls.crt" -}}
{{- $_ := set $endpoint "key_file" "/etc/meshward/bundle-endpoint-tls/tls.key" -}}
{{- end -}}
{{- $_ := set $c "bundle_endpoint" $endpoint -}}
{{- end -}}
{{- with .Values.federation.federatesWith -}}
{{- $relationships := list -}}
{{- range . -}}
{{- $r := dict "trust_domain" .trustDomain "bundle_endpoint_url" .bundleEndpointURL "bundle_endpoint_profile" .bundleEndpointProfile -}}
{{- with .endpointSPIFFEID }}{{ $_ := set $r "endpoint_spiffe_id" . }}{{ end -}}
{{- if .trustDomainBundle -}}
{{- $_ := set $r "trust_domain_bundle_path" (printf "/etc/meshward/%s" (include "meshward.bundleFile" .trustDomain)) -}}
{{- end -}}
{{- $relationships = append $relationships $r -}}
{{- end -}}
{{- $_ := set $c "federation" (dict "federates_with" $relationships) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.issuer.config)) -}}
{{- end -}}

{{/* proxy.yaml, as a dict (node.config merged over). */}}
{{- define "meshward.nodeConfig" -}}
{{- $agent := dict
  "issuer_address" (printf "meshward-issuer.%s.svc:8081" .Release.Namespace)
  "trust_bundle_path" "/etc/meshward/bundle/bundle.pem"
  "data_dir" "/var/lib/meshward/agent"
  "workloads" (dict "kubernetes" dict)
  "workload_api_socket" "/run/meshward/sockets/agent.sock" -}}
{{- if eq .Values.attestation.type "k8s_psat" -}}
{{- $_ := set $agent "k8s_psat" (dict "cluster" .Values.attestation.k8sPsat.cluster "token_path" "/var/run/secrets/tokens/meshward-node") -}}
{{- else -}}
{{- $_ := set $agent "join_token_file" "/var/run/secrets/meshward/join-token" -}}
{{- end -}}
{{- $c := dict
  "trust_domain" .Values.trustDomain
  "readiness_socket" "/tmp/meshward-ready.sock"
  "agent" $agent
  "capture" (dict "pod_interface_prefix" .Values.node.podInterfacePrefix "exclude_cidrs" .Values.node.excludeCIDRs)
  "outbound" (dict "mesh_cidrs" .Values.node.meshCIDRs "kubernetes" dict)
  "authorization" (dict "kubernetes" dict "policy_paths" (list "/etc/meshward/policies")) -}}
{{- toYaml (mustMergeOverwrite $c (deepCopy .Values.node.config)) -}}
{{- end -}}

{{/* proxy.yaml of the nodes that attest with aws_iid: meshward.nodeConfig with
agent.aws_iid in place of the other method. */}}
{{- define "meshward.nodeConfigAwsIid" -}}
{{- $c := include "meshward.nodeConfig" . | fromYaml -}}
{{- $_ := unset $c.agent "k8s_psat" -}}
{{- $_ := unset $c.agent "join_token_file" -}}
{{- $_ := set $c.agent "aws_iid" dict -}}
{{- toYaml $c -}}
{{- end -}}
