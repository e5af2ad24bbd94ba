"""What the dashboard draws, computed: score distributions, value histograms, filter correlations, feature-map
grids, rank agreement between criteria and how reproducible a ranking is across probe samples."""
