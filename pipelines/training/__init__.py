"""Training on Ray Train: the typed TrainConfig and WorkerPlan (config), what each worker runs (loop), the
Ray Data ingest of VOC-layout data (ingest) and the metrics, curves and TensorBoard files of a run (log)."""
