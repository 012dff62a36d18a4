#!/usr/bin/env node
// Reads fal's published descriptions of its endpoints and writes them as one JSON file of
// plain JSON Schemas, the input of tools/build_catalogue.py and tools/compare_catalogue.py:
//
//   node tools/fal_sources.mjs --fal-js PATH_TO_FAL_JS_GIT_DIR [--out FILE]
//
// Two kinds of source, each kept with its date:
// - fal-js's per-endpoint JSON Schemas (`libs/schemas`, pull request 212: the newest commit
//   of any ref that carries `libs/schemas/src/*/endpoint-schema-map.ts`): the truth where
//   an endpoint has one.
// - the TypeScript types fal publishes: `@fal-ai/client` NEWEST and OLDER from npm, and
//   fal-js's own newest `libs/client/src/types/endpoints.ts` (on its main branch, newer than
//   any release). They give one type to endpoints whose schemas differ, so they only count
//   where no schema exists; they are turned into JSON Schema here (file inputs carry
//   `x-fal-file-input`, as in fal's schemas).
// Only endpoints that return images are kept (an `images` list or an `image` of files).
// It packs the npm tarballs and installs `typescript` in a temporary directory.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import vm from "node:vm";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

const NEWEST = "1.10.1";
// Older types searched for endpoints fal has since dropped (SeedEdit 3.0's last one is 1.9.5).
const OLDER = ["1.9.5"];
const TYPESCRIPT = "typescript@5.9";
const SCHEMA_MAP = "endpoint-schema-map.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, a, i, all) =>
  a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs, []));
const outFile = args.out || path.join(here, "..", "tests", "data", "fal_sources.json.gz");
const falJs = args["fal-js"];
if (!falJs) {
  console.error("usage: node tools/fal_sources.mjs --fal-js PATH_TO_FAL_JS_GIT_DIR [--out FILE]");
  process.exit(2);
}
const git = (...a) => execFileSync("git", ["--git-dir", falJs, ...a], { encoding: "utf8", maxBuffer: 1 << 30 });

function main() {
  const work = mkdtempSync(path.join(tmpdir(), "fal-sources-"));
  const sh = (cmd, argv) => execFileSync(cmd, argv, { cwd: work, encoding: "utf8",
    stdio: ["ignore", "pipe", "ignore"], maxBuffer: 1 << 30 });
  try {
    sh("npm", ["init", "-y"]);
    sh("npm", ["install", "--no-audit", "--no-fund", TYPESCRIPT]);
    const ts = createRequire(path.join(work, "package.json"))("typescript");
    const sources = [];
    const endpoints = {};
    const add = (name, byId) => {
      for (const [id, io] of Object.entries(byId)) {
        const images = resultImages(io.output);
        if (!images) continue;
        (endpoints[id] ||= {})[name] = { input: io.input,
          output: { images, fields: Object.keys(io.output.properties || {}) } };
      }
    };

    const schemas = readSchemas();
    sources.push({ name: "schemas", kind: "schema", what: `fal-js ${schemas.commit} libs/schemas (${schemas.ref})`,
      date: schemas.date, endpoints: Object.keys(schemas.byId).length });
    add("schemas", schemas.byId);

    const head = git("log", "-1", "--format=%h %cs", "main", "--", "libs/client/src/types/endpoints.ts").trim().split(" ");
    const mainTypes = readEndpointTypes(ts, git("show", `${head[0]}:libs/client/src/types/endpoints.ts`));
    sources.push({ name: "types-main", kind: "types", what: `fal-js ${head[0]} libs/client/src/types/endpoints.ts (main)`,
      date: head[1], endpoints: Object.keys(mainTypes).length });
    add("types-main", mainTypes);

    const published = JSON.parse(sh("npm", ["view", "@fal-ai/client", "time", "--json"]));
    for (const v of [NEWEST, ...OLDER]) {
      const tgz = sh("npm", ["pack", "--silent", `@fal-ai/client@${v}`]).trim().split("\n").pop();
      const dir = path.join(work, v);
      sh("mkdir", ["-p", dir]);
      sh("tar", ["xzf", tgz, "-C", dir]);
      const types = readEndpointTypes(ts, readFileSync(path.join(dir, "package", "src", "types", "endpoints.d.ts"), "utf8"));
      sources.push({ name: `types-${v}`, kind: "types", what: `@fal-ai/client@${v} src/types/endpoints.d.ts`,
        date: (published[v] || "").slice(0, 10), endpoints: Object.keys(types).length,
        ...(v === NEWEST ? {} : { older: true }) });
      add(`types-${v}`, types);
    }
    const sorted = Object.fromEntries(Object.entries(endpoints).sort(([a], [b]) => a.localeCompare(b)));
    const text = JSON.stringify({ sources, endpoints: sorted });
    writeFileSync(outFile, outFile.endsWith(".gz") ? zlib.gzipSync(text, { level: 9 }) : text);
    console.log(`${Object.keys(sorted).length} endpoints that return images -> ${outFile}`);
    for (const s of sources) console.log(`  ${s.name}: ${s.what}, ${s.date}, ${s.endpoints} endpoints`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// fal-js libs/schemas -> { id: { input, output } }, $refs resolved

function readSchemas() {
  // The newest commit, on any ref, that carries the per-endpoint schema maps.
  const commit = git("log", "--all", "-1", "--format=%H", "--", `libs/schemas/src/image/${SCHEMA_MAP}`).trim();
  const date = git("log", "-1", "--format=%cs", commit).trim();
  const ref = git("for-each-ref", "--points-at", commit, "--format=%(refname:short)").trim().split("\n")[0] || commit;
  const files = git("ls-tree", "-r", "--name-only", commit, "libs/schemas/src").split("\n");
  const byId = {};
  for (const mapFile of files.filter((f) => f.endsWith(`/${SCHEMA_MAP}`))) {
    const dir = path.dirname(mapFile);
    // schemas.gen.ts is `export const NameSchema = {...} as const;` over and over: plain data.
    const code = git("show", `${commit}:${dir}/schemas.gen.ts`)
      .replace(/^export const (\w+) =/gm, "S.$1 =").replace(/\}\s+as const;/g, "};");
    const S = {};
    vm.runInNewContext(code, { S });
    const map = git("show", `${commit}:${mapFile}`);
    for (const m of map.matchAll(/^\s*"([^"]+)": \{\s*input: (\w+),\s*output: (\w+),?\s*\}/gm)) {
      const [, id, input, output] = m;
      if (!S[input] || !S[output]) continue;
      byId[id] = { input: inline(S[input], S[input].$defs || {}, 0), output: inline(S[output], S[output].$defs || {}, 0) };
    }
  }
  return { byId, commit: commit.slice(0, 7), date, ref };
}

function inline(node, defs, depth) {
  // The schema with every `#/$defs/X` replaced by X (three levels of objects deep at most).
  if (Array.isArray(node)) return node.map((n) => inline(n, defs, depth));
  if (!node || typeof node !== "object") return node;
  if (node.$ref) {
    const name = node.$ref.split("/").pop();
    if (depth > 3 || !defs[name]) return { type: "object", title: name };
    const { $ref, ...rest } = node;
    return { ...inline(defs[name], defs, depth + 1), ...rest };
  }
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "$defs" || k === "examples") continue;
    out[k] = inline(v, defs, depth);
  }
  return out;
}

function resultImages(output) {
  // Where the result images are: an `images` list of files, else an `image` file (or list).
  const isFile = (s) => !!(s && s.properties && s.properties.url);
  const p = (output && output.properties) || {};
  const unwrap = (s) => (s && s.anyOf ? s.anyOf.find((a) => a.type !== "null") : s);
  const images = unwrap(p.images);
  if (images && images.type === "array" && isFile(unwrap(images.items))) return "images";
  const image = unwrap(p.image);
  return image && (isFile(image) || (image.type === "array" && isFile(unwrap(image.items)))) ? "image" : null;
}

// ---------------------------------------------------------------------------
// endpoints.d.ts -> { id: { input, output } } as JSON Schema

function readEndpointTypes(ts, text) {
  const sf = ts.createSourceFile("endpoints.d.ts", text, ts.ScriptTarget.Latest, true);
  const aliases = new Map();
  for (const st of sf.statements) {
    if (ts.isTypeAliasDeclaration(st) || ts.isInterfaceDeclaration(st)) aliases.set(st.name.text, st);
  }
  const endpoints = {};
  for (const member of aliases.get("EndpointTypeMap").type.members) {
    const io = {};
    for (const m of member.type.members) io[m.name.text] = m.type;
    endpoints[member.name.text] = { input: typeSchema(ts, aliases, io.input, 0),
      output: typeSchema(ts, aliases, io.output, 0) };
  }
  return endpoints;
}

function resolve(ts, aliases, node) {
  // Follows `type A = B` references to the type literal they name.
  for (let i = 0; i < 10 && node && ts.isTypeReferenceNode(node); i += 1) {
    const decl = aliases.get(node.typeName.getText());
    if (!decl) return node;
    node = ts.isInterfaceDeclaration(decl) ? decl : decl.type;
  }
  return node;
}

function literalValue(ts, node) {
  const lit = node.literal;
  if (lit.kind === ts.SyntaxKind.TrueKeyword) return true;
  if (lit.kind === ts.SyntaxKind.FalseKeyword) return false;
  if (ts.isNumericLiteral(lit)) return Number(lit.text);
  if (ts.isPrefixUnaryExpression(lit)) return -Number(lit.operand.text);
  return lit.text;
}

function typeSchema(ts, aliases, typeNode, depth) {
  let node = typeNode;
  while (ts.isParenthesizedTypeNode(node)) node = node.type;
  if (ts.isUnionTypeNode(node)) {
    const texts = node.types.map((t) => t.getText()).sort().join("|");
    if (texts === "Blob|File|string") return { type: "string", "x-fal-file-input": true };
    const isNull = (t) => t.kind === ts.SyntaxKind.NullKeyword ||
      (ts.isLiteralTypeNode(t) && t.literal.kind === ts.SyntaxKind.NullKeyword);
    const parts = node.types.filter((t) => !isNull(t));
    const nullable = parts.length !== node.types.length;
    let inner;
    if (parts.every((t) => ts.isLiteralTypeNode(t))) {
      const values = parts.map((t) => literalValue(ts, t));
      inner = { type: typeof values[0], enum: values };
    } else if (parts.length === 1) {
      inner = typeSchema(ts, aliases, parts[0], depth);
    } else {
      inner = { anyOf: parts.map((t) => typeSchema(ts, aliases, t, depth)) };
    }
    return nullable ? { anyOf: [inner, { type: "null" }] } : inner;
  }
  if (ts.isLiteralTypeNode(node)) {
    if (node.literal.kind === ts.SyntaxKind.NullKeyword) return { type: "null" };
    const value = literalValue(ts, node);
    return { type: typeof value, enum: [value] };
  }
  switch (node.kind) {
    case ts.SyntaxKind.StringKeyword: return { type: "string" };
    case ts.SyntaxKind.NumberKeyword: return { type: "number" };
    case ts.SyntaxKind.BooleanKeyword: return { type: "boolean" };
    default: break;
  }
  if (ts.isArrayTypeNode(node) || (ts.isTypeReferenceNode(node) && node.typeName.getText() === "Array")) {
    const item = ts.isArrayTypeNode(node) ? node.elementType : node.typeArguments[0];
    return { type: "array", items: typeSchema(ts, aliases, item, depth) };
  }
  if (ts.isTypeReferenceNode(node)) {
    const name = node.typeName.getText();
    const target = resolve(ts, aliases, node);
    if (target && (ts.isTypeLiteralNode(target) || ts.isInterfaceDeclaration(target))) {
      return depth < 3 ? { ...typeSchema(ts, aliases, target, depth + 1), title: name } : { type: "object", title: name };
    }
    if (target && target !== node) return typeSchema(ts, aliases, target, depth);
    return {};
  }
  if (ts.isTypeLiteralNode(node) || ts.isInterfaceDeclaration(node)) {
    const properties = {};
    const required = [];
    for (const m of node.members) {
      if (!ts.isPropertySignature(m) || !m.type) continue;
      const name = m.name.text;
      const doc = ts.getJSDocCommentsAndTags(m).map((d) => (typeof d.comment === "string" ? d.comment :
        (d.comment || []).map((c) => c.text).join(""))).join(" ").trim();
      const p = typeSchema(ts, aliases, m.type, depth);
      const match = doc.match(/Default value: `([\s\S]*?)`\s*$/);
      let description = doc;
      if (match) {
        description = doc.slice(0, match.index).trim();
        try { p.default = JSON.parse(match[1]); } catch { p.default = match[1]; }
      }
      if (description) p.description = description;
      properties[name] = p;
      if (!m.questionToken) required.push(name);
    }
    return { type: "object", properties, required, "x-fal-order-properties": Object.keys(properties) };
  }
  return {};
}

main();
