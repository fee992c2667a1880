"""Publishing to a model repository and driving TensorFlow Serving (deploy, canary, rollback).

`repository` (local filesystem / S3 model repository), `models_config` (TF Serving's
ModelServerConfig), `client` (REST + gRPC), `deploy` (the transactions behind the CLI).
"""
