"""The pipeline layer: one module per DVC stage. Each reads its params, calls the srcore
library, writes its outputs and metrics, and records an MLflow run."""
