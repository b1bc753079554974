"""What every driver uses: command-line options and checked number types (options), Ray and storage set-up and
one-line errors (runtime), the pictures (charts). Feature code lives in pipelines.training and
pipelines.segmentation; the drivers are the modules one level up."""
