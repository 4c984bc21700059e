"""``niche serve``: the HTTP service (FastAPI) over servables: classifiers, assistants, recommenders.

:mod:`.app` builds the app (``create_app``), :mod:`.servables` is the one protocol every served
kind implements (:mod:`.classifier`, :mod:`.assistant`, :mod:`.recommend`), :mod:`.batching` the
micro-batcher, :mod:`.metrics` the Prometheus metrics, :mod:`.errors` the one error-to-status table.
"""
