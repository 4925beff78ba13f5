"""The controller: kopf-free. What the operator remembers of each run (`state`), which changes wake a run
(`wake`), the work queue, the watch-fed children's cache (`informer`), the pass (`passes`: observe -> the pure
planner -> `apply`), storage reads, refused-pod sweeps and the event sender, wired and run by `controller`."""
