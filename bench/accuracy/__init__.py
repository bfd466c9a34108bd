"""Quality: detectors, embeddings, outlier scores and identities on real (and synthetic) sets."""
