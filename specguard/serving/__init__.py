"""Starting and stopping vLLM servers: one server as a context manager that cannot leak its processes, the
pool of live servers, the supervisor that takes a server's process group down when pytest dies, the
builtin models a matrix names (and their inflated variants), and the API key kept out of logs."""
