"""The CRF tuning (``pipelines.tune_crf``): its results table."""
