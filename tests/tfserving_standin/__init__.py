"""A stand-in for ``tensorflow_model_server``, for tests only.

This package is a test double. It is not TF Serving, is never shipped, and must not be described
as TF Serving. It exists because the real binary cannot run on our CI machines; it takes the real
binary's flags and speaks its REST and gRPC APIs on 127.0.0.1 so that the same tests can run
against a real ``tensorflow_model_server`` (``TFSHIP_MODEL_SERVER``) where one exists.

Start it from the repository root::

    python -m tests.tfserving_standin --port=0 --rest_api_port=8501 \\
        --model_config_file=models.config --file_system_poll_wait_seconds=1

Where each behaviour comes from (the tensorflow/serving sources it reproduces) is written down in
the docstring of the module that implements it:

* ``flags``        – main.cc flags and defaults;
* ``status``       – error codes, HTTP mapping (http_server.cc ToHTTPStatusCode), gRPC mapping;
* ``model_config`` – ModelServerConfig validation (server_core.cc ReloadConfig, GetPlatform);
* ``core``         – version polling, policies, load retries, states, labels (server_core.cc,
                     file_system_storage_path_source.cc, aspired_versions_manager,
                     availability_preserving_policy, get_model_status_impl.cc);
* ``servable``     – SavedModel loading, signatures, metadata (get_model_metadata_impl.cc,
                     predict_util.cc);
* ``json_tensor``  – REST JSON <-> tensors (util/json_tensor.cc);
* ``rest``         – REST routes and errors (http_rest_api_handler.cc, http_rest_api_util.cc);
* ``grpc_services``– PredictionService / ModelService (model_service_impl.cc, main.cc).

``fixture.start_model_server`` starts it (or the real binary) for pytest.
"""
