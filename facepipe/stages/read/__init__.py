"""Reading inputs: listing them into units (local folders, S3 prefixes, inventory files), the Ray
Data datasource, WebDataset tar members."""
