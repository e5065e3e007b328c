"use strict";

// ESLint's recommended rules over the package, its tests and test support: CommonJS on
// Node.js 20+ (node_modules is ignored by default).
const js = require("@eslint/js");
const globals = require("globals");

module.exports = [
  js.configs.recommended,
  {
    files: ["**/*.js"],
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: "commonjs",
      globals: { ...globals.node },
    },
  },
];
