"""`tunesmith board`: one local web page to start, watch, compare and talk to runs (app.py says the rules).

paths.py keeps every path inside the run directories given on the command line; scan.py reads run folders;
launch.py starts, stops and resumes `tunesmith train` processes; chat.py answers prompts with a finished run;
app.py, pages.py and actions.py are the web app; server.py serves it."""
