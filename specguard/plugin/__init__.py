"""The pytest plugin: its hooks and fixtures, the session object the fixtures read from, the progress line
and bar, turning checks into pytest outcomes, and running cells on several pytest-xdist workers."""
