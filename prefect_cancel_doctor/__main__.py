"""`python -m prefect_cancel_doctor`."""

from prefect_cancel_doctor.cli import main

if __name__ == "__main__":
    main()
