"""Batch runs of the scenario notebooks (`labkit run`, `labkit report`): papermill executes a notebook into a
new run directory (`runs`), on a kernelspec that starts this interpreter (`kernel`), after its parameters were
checked against the notebook's cell and the scenario's spec (`notebooks`); the SLO report notebook is then
rendered as one self-contained HTML file (`html`), with cells.json and run.json describing the run (`cells`).
"""
