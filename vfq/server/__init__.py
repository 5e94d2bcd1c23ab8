"""The server side: the ensemble's python steps (:mod:`vfq.server.steps`), their Triton adapters
(:mod:`vfq.server.backend`) and the embedded ``tritonserver`` launcher (:mod:`vfq.server.embedded`)."""
