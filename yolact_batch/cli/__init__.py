"""The yolact-batch command line."""
