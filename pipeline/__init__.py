"""ehc: batch enrolment of residents for the electronic health card platform."""

__version__ = "0.1.0"
