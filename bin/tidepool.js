#!/usr/bin/env node
// Entry shim: Node >= 22.18 / 24 runs the TypeScript sources directly (type stripping).
import '../src/cli/main.ts'
