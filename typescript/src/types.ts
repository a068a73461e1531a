/**
 * The API's wire types, by their names in the OpenAPI document (`docs/openapi.json`), from the
 * generated `generated/openapi.ts`.
 */

import type { components, operations, paths } from "./generated/openapi.js";

export type { components, operations, paths };

/** Every schema of the OpenAPI document, by name: `Schemas["Session"]`, … */
export type Schemas = components["schemas"];
