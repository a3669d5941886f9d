"""The Ray Serve application that serves the model through vLLM (``app.build_app``).

In the cluster these ``.py`` files are a ConfigMap mounted on the Ray head and worker pods and importable as package
``llm_serve`` (``settings.SERVE_PACKAGE``); in this repository they are ``workloads.serve``.  Hence only relative
imports, only ``.py`` files, and Ray / vLLM / boto3 imported lazily (``tests/test_serve_app.py`` checks all three).

Modules: ``settings`` (the args contract with the RayService), ``launch`` (args -> vLLM flags, env, Serve options),
``cache`` (compiled-artifact cache in S3), ``compat`` (every vLLM-version-specific line), ``app`` (the deployment).
"""
