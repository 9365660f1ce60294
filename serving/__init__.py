"""The prediction service and its log, imported by flows, tasks and deployments (it imports none of them).

- `app`: the HTTP app and `python -m serving`; `service`: routing, models, predictions and outcomes;
  `schema`: a request's instances and features against the model signature; `models`: loaded versions, the
  snapshot, the breaker, the metrics.
- `ablog`: the log of experiments, every prediction served and the observed outcomes.
- `traffic`: the service as a process, and a week of real rows sent to it as requests and outcomes.
"""
