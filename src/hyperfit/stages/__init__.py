"""The pipeline stages, each reading and writing the run directory: data, generate, evaluate, report, compare,
agreement, and the pipeline that chains them."""
