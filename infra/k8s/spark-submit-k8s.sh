#!/usr/bin/env bash
# Run a ctlake job on Kubernetes in cluster mode with the image of infra/k8s/Dockerfile. Not run by
# ctlake's tests (no cluster here). Example:
#   IMAGE=registry.example.org/ctlake:0.1.0 K8S=https://k8s.example.org:6443 \
#     infra/k8s/spark-submit-k8s.sh jobs/build_volumes.py
#   ... infra/k8s/spark-submit-k8s.sh jobs/ingest_folder.py s3a://bucket/incoming/2024-06-01
# The job file is taken from the image (local:///opt/ctlake/jobs/...). ctlake is installed in the
# image, so no --py-files is needed; the Delta and Kafka jars are on Spark's classpath there.
# The profile is conf/cluster.yaml (CTLAKE_PROFILE=cluster in the image); override single keys with
# CTLAKE__SECTION__KEY, passed to the driver and the executors below.
set -euo pipefail
: "${IMAGE:?set IMAGE to the pushed ctlake image}"
: "${K8S:?set K8S to the API server URL, e.g. https://k8s.example.org:6443}"
NAMESPACE=${NAMESPACE:-ctlake}
EXECUTORS=${EXECUTORS:-4}
JOB=${1:?usage: $0 jobs/NAME.py [ARGS...]}
shift
NAME=ctlake-$(basename "$JOB" .py | tr '_' '-')
LAKE=${CTLAKE__LAKE__ROOT:-}

env_conf=()
for key in CTLAKE_PROFILE ${LAKE:+CTLAKE__LAKE__ROOT}; do
  env_conf+=(--conf "spark.kubernetes.driverEnv.$key=${!key:-cluster}" --conf "spark.executorEnv.$key=${!key:-cluster}")
done
for secret in CTLAKE_DEID_SITE_KEY CTLAKE__KAFKA__SASL_PASSWORD CTLAKE__ELASTICSEARCH__API_KEY; do
  env_conf+=(--conf "spark.kubernetes.driver.secretKeyRef.$secret=ctlake-secrets:$secret"
             --conf "spark.kubernetes.executor.secretKeyRef.$secret=ctlake-secrets:$secret")
done

exec spark-submit \
  --master "k8s://$K8S" --deploy-mode cluster --name "$NAME" \
  --conf spark.kubernetes.namespace="$NAMESPACE" \
  --conf spark.kubernetes.container.image="$IMAGE" \
  --conf spark.kubernetes.authenticate.driver.serviceAccountName=ctlake-spark \
  --conf spark.executor.instances="$EXECUTORS" \
  --conf spark.executor.cores=4 --conf spark.executor.memory=16g --conf spark.driver.memory=8g \
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \
  --conf spark.pyspark.python=/opt/venv/bin/python --conf spark.pyspark.driver.python=/opt/venv/bin/python \
  "${env_conf[@]}" \
  "local:///opt/ctlake/$JOB" "$@"
