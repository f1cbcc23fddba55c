"""The pgmdl model zoo: plain Pyro programs a user could have written."""
