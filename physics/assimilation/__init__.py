"""Data assimilation: observation operators, score-based data assimilation (SDA) and DPS on learned
trajectory priors, ensemble Kalman filters, and the metrics that compare them."""
