"""Segmenting and evaluating on Ray Data: the stages (stages), what a job reads and where each input's outputs go
(inputs), the Parquet manifest (manifest), scoring against labels (scoring) and the CRF's CPU sizing line
(sizing)."""
