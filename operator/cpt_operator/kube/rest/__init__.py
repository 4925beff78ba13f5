"""The REST layer: requests to the API server and nothing else (`client`: the verbs a pass needs; `watch`: the
list-then-watch streams the informer reads). It imports no kopf, no controller, no storage, no planner."""
