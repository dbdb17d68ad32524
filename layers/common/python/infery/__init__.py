"""infery: the code every Lambda function shares (deployed as a layer), in layers that import only downwards:
``http`` (the API's edge) -> ``settings``/``wiring`` (build everything) -> ``usecases`` and ``adapters`` ->
``domain`` (no AWS). README's "How it is built" has the picture; ``tests/unit/test_layers.py`` checks it."""
