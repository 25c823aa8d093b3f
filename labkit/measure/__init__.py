"""Measurement: the load generator (`load`), Prometheus' series (`prom`, `promql`, `collect`), the lab's
histogram buckets (`histograms`), the SLO engine (`slo`), recovery measures per fault (`recovery`) and the
smoke check (`smoke`).
"""
