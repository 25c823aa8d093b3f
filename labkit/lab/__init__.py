"""The lab: the services started, watched and stopped together, on a backend (`local` child processes under a
supervisor, or `docker` containers beside an agent). `registry` picks the backend of a lab directory.

The host side (what `labkit up`/`down`/`status` and chaos call) lives here; the lab's manager processes (the
supervisor, the Docker agent, the exporter and control API they share) live in `labkit.lab.manager`.
"""
