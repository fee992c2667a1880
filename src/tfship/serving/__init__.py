"""Publishing to a model repository and driving TensorFlow Serving (deploy, canary, rollback).

`repository` (publish protocol; `repository_local` / `repository_s3` backends), `deploy_log`
(who/when/why records), `models_config` (TF Serving's ModelServerConfig), `client` (REST +
gRPC), `target` (a repository plus the server reading it), `transaction` (undo on failure,
results, retention), `deploy` (publish/deploy/promote/rollback), `deploy_gate` (gate.json
must pass and be about the export deployed), `status`, `launchers` (the model servers
`tfship validate` starts). Export layout shared with other stages: `tfship.artifacts`.
"""
