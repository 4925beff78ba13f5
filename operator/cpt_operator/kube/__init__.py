"""The Kubernetes executor, in three layers and the pure builders beside them:

- `controller/`: kopf-free; one `RunState` per run (`state`), the work queue, the wake rules (`wake`), the
  watch-fed children's cache (`informer`), the pass (`passes`: observe -> planner.plan -> `apply`), storage
  reads, refused-pod sweeps, the event sender; `controller.Controller` wires and runs them in one asyncio loop.
- `kopf_adapter`: the only module that imports kopf; its handlers start, feed and stop the controller.
- `rest/`: the API server and nothing else (`client`: the pass's requests; `watch`: list-then-watch streams).
- pure builders: `children` (intents -> manifests), `manifests`, `jobs`, `units`, `wrapped`, `ownership`,
  `observe` (objects -> the planner's view), `permissions`, `settings`/`settings_table`/`defaults`, `crdgen`.
"""
