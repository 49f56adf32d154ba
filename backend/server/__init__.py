"""`dreamfusion-backend serve`: the ZeroMQ job service (store, workers, routing, security)."""
