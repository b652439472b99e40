#!/usr/bin/env bash
# Run a ctlake job on YARN (lake on HDFS). Not run by ctlake's tests (no YARN here). Example, from a
# gateway node with HADOOP_CONF_DIR set and the ctlake checkout + its venv (make venv):
#   infra/k8s/spark-submit-yarn.sh jobs/build_volumes.py
# ctlake goes to the driver and the executors as the wheel renamed .zip: PySpark puts only .zip/.egg/.jar
# --py-files on the executors' sys.path (a .whl reaches the driver only). The Python on the nodes must
# have the stack (requirements/lock.txt): either the same venv path on every node, or ship a packed
# environment with --archives (e.g. venv-pack -o ctlake-env.tar.gz; then
# --archives ctlake-env.tar.gz#env --conf spark.pyspark.python=./env/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
JOB=${1:?usage: $0 jobs/NAME.py [ARGS...]}
shift
export CTLAKE_PROFILE=${CTLAKE_PROFILE:-cluster}          # conf/cluster.yaml: spark.master yarn, lake on hdfs://
rm -rf dist && .venv/bin/pip wheel -q --no-deps --no-build-isolation -w dist .
cp dist/ctlake-*.whl dist/ctlake.zip
# shellcheck disable=SC2046  # the profile's settings are several words on purpose
exec .venv/bin/spark-submit $(.venv/bin/ctlake spark-conf) \
  --deploy-mode "${DEPLOY_MODE:-client}" \
  --num-executors "${EXECUTORS:-8}" --executor-cores 4 --executor-memory 16g \
  --py-files dist/ctlake.zip \
  --conf spark.yarn.appMasterEnv.CTLAKE_PROFILE="$CTLAKE_PROFILE" \
  --conf spark.executorEnv.CTLAKE_PROFILE="$CTLAKE_PROFILE" \
  "$JOB" "$@"
