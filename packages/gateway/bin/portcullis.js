#!/usr/bin/env node
// The `portcullis` command; kept outside dist so the link exists before the first build.
import '../dist/cli.js'
