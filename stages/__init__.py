"""The pipeline layer: one module per DVC stage (evaluate.py runs both evaluate stages), and the
pieces they share. Each stage reads its params, calls the srcore library and writes its outputs;
all but check_params record an MLflow run."""
