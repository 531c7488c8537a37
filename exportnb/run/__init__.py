"""Running the incident notebook: papermill on a kernel, validated parameters, finalize."""
