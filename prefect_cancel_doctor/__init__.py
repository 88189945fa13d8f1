"""prefect-cancel-doctor: why won't this Prefect flow run cancel?"""

__version__ = "0.1.0"
