from flushwatch.cli import app

app(prog_name="flushwatch")
