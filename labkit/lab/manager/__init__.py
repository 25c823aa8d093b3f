"""The lab's manager processes: the local supervisor and the Docker agent, which both serve the exporter and
the control API (`control`), hold the faults' TTLs (pause timers, stress-ng) and count every restart.
"""
