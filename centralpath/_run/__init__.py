"""Run infrastructure: typed configurations, run directories, resource guards, the CPU runtime
and progress. Depends on the core and on file I/O only; nothing in the core imports it."""
