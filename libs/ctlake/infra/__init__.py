"""Local services (Kafka, MLflow, Elasticsearch, Spark standalone) and the JVM artefacts they need."""
