"""What the pipeline reads and where it keeps it: caption files and downloads, the vocabulary, images and
the encoders that turn them into features, the feature store, and the run folder where the stages meet."""
