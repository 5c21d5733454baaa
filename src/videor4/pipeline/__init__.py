"""What the pipeline stages share: strict params (config), MLflow (tracking), S3 (storage), lineage and the
stage runner. The only part of the library that knows DVC."""
