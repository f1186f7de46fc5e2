#!/usr/bin/env node
// Entry point of the `mailroom` command: runs the built CLI (npm run build makes dist/).
import { main } from '../dist/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`mailroom: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
