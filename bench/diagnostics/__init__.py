"""Where a number comes from: outputs compared between commits, the driver's memory traced."""
