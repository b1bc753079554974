"""What the drivers share: options, input naming, the Ray Data stages, the manifest, Ray and storage set-up, the
training data ingest and the training log. The drivers themselves are the modules one level up."""
