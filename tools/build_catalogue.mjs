#!/usr/bin/env node
// Builds nodes/data/catalogue.json: every fal endpoint that takes an image and
// returns images, read from the types fal publishes in @fal-ai/client
// (src/types/endpoints.d.ts) with the TypeScript compiler API, plus the ranges
// fal-js publishes as JSON Schema (libs/schemas/src/*/schemas.gen.ts).
//
//   node tools/build_catalogue.mjs --fal-js PATH_TO_FAL_JS_GIT_DIR [--out FILE]
//
// It packs @fal-ai/client (NEWEST and every OLDER version below) and installs
// `typescript` into a temporary directory: nothing of npm's lands in the pack.
// Endpoints that are in an older version's types but gone from the newest keep
// the data of the last version that had them and are marked `retired`.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const NEWEST = "1.10.1";
// Older types searched for endpoints fal has since dropped (SeedEdit 3.0's last one is 1.9.5).
const OLDER = ["1.9.5"];
const TYPESCRIPT = "typescript@5.9";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, a, i, all) =>
  a.startsWith("--") ? [...pairs, [a.slice(2), all[i + 1]]] : pairs, []));
const outFile = args.out || path.join(here, "..", "nodes", "data", "catalogue.json");
// A clone of github.com/fal-ai/fal-js (its git directory): where fal publishes ranges.
const falJs = args["fal-js"] || "";

function main() {
const work = mkdtempSync(path.join(tmpdir(), "fal-catalogue-"));
const sh = (cmd, argv, opts = {}) => execFileSync(cmd, argv, { cwd: work, encoding: "utf8",
  stdio: ["ignore", "pipe", "ignore"], maxBuffer: 1 << 30, ...opts });

try {
  sh("npm", ["init", "-y"]);
  sh("npm", ["install", "--no-audit", "--no-fund", TYPESCRIPT]);
  const ts = createRequire(path.join(work, "package.json"))("typescript");
  const versions = [NEWEST, ...OLDER];
  const parsed = {};
  for (const v of versions) {
    const tgz = sh("npm", ["pack", "--silent", `@fal-ai/client@${v}`]).trim().split("\n").pop();
    const dir = path.join(work, v);
    sh("mkdir", ["-p", dir]);
    sh("tar", ["xzf", tgz, "-C", dir]);
    parsed[v] = readEndpointTypes(ts, readFileSync(path.join(dir, "package", "src", "types",
      "endpoints.d.ts"), "utf8"));
  }
  if (!falJs || !existsSync(falJs)) console.warn("no --fal-js clone given: the catalogue has no ranges");
  const ranges = falJs && existsSync(falJs) ? readFalJsSchemas(ts, falJs) : { byEndpoint: {}, commit: null };

  const endpoints = {};
  const counts = {};
  for (const v of versions) {
    const all = parsed[v];
    counts[v] = { endpoints: Object.keys(all).length, image_to_image: 0 };
    for (const [id, io] of Object.entries(all)) {
      const entry = catalogueEntry(id, io, ranges.byEndpoint[id]);
      if (!entry) continue;
      counts[v].image_to_image += 1;
      if (endpoints[id]) continue;
      if (v !== NEWEST) entry.retired = `gone from @fal-ai/client after ${v}`;
      entry.types = v;
      endpoints[id] = entry;
    }
  }
  const sorted = Object.fromEntries(Object.entries(endpoints).sort(([a], [b]) => a.localeCompare(b)));
  const header = {
    generated: new Date().toISOString().slice(0, 10),
    source: { client: `@fal-ai/client@${NEWEST}`, older: OLDER.map((v) => `@fal-ai/client@${v}`),
      ranges: ranges.commit ? `fal-js ${ranges.commit} libs/schemas/src/*/schemas.gen.ts` : null },
    counts,
    regenerate: "node tools/build_catalogue.mjs --fal-js path/to/fal-js/.git",
  };
  // One endpoint per line: compact, and a regeneration diffs line by line.
  const lines = Object.entries(sorted).map(([id, e]) => `${JSON.stringify(id)}:${JSON.stringify(e)}`);
  const text = `{"catalogue":${JSON.stringify(header)},\n"endpoints":{\n${lines.join(",\n")}\n}}\n`;
  writeFileSync(outFile, text);
  console.log(`${Object.keys(sorted).length} endpoints -> ${outFile}`);
  for (const v of versions) console.log(`  @fal-ai/client@${v}: ${counts[v].endpoints} endpoints, ` +
    `${counts[v].image_to_image} image->image`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
}

// ---------------------------------------------------------------------------
// endpoints.d.ts -> { id: { input: Field[], output: Field[] } }

function readEndpointTypes(ts, text) {
  const sf = ts.createSourceFile("endpoints.d.ts", text, ts.ScriptTarget.Latest, true);
  const aliases = new Map();
  for (const st of sf.statements) {
    if (ts.isTypeAliasDeclaration(st) || ts.isInterfaceDeclaration(st)) aliases.set(st.name.text, st);
  }
  const map = aliases.get("EndpointTypeMap");
  const endpoints = {};
  for (const member of map.type.members) {
    const id = member.name.text;
    const io = {};
    for (const m of member.type.members) io[m.name.text] = m.type;
    endpoints[id] = {
      input: objectFields(ts, aliases, io.input, 0),
      output: objectFields(ts, aliases, io.output, 0),
    };
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

function objectFields(ts, aliases, typeNode, depth) {
  const node = resolve(ts, aliases, typeNode);
  const members = node && (node.members || []);
  const fields = [];
  for (const m of members) {
    if (!ts.isPropertySignature(m) || !m.type) continue;
    const doc = ts.getJSDocCommentsAndTags(m).map((d) => (typeof d.comment === "string" ? d.comment :
      (d.comment || []).map((c) => c.text).join(""))).join(" ").trim();
    const f = { name: m.name.text, required: !m.questionToken, ...describeType(ts, aliases, m.type, depth) };
    const match = doc.match(/Default value: `([\s\S]*?)`\s*$/);
    let description = doc;
    if (match) {
      description = doc.slice(0, match.index).trim();
      try { f.default = JSON.parse(match[1]); } catch { f.default = match[1]; }
    }
    if (description) f.description = description;
    fields.push(f);
  }
  return fields;
}

const FILE_LIKE = (ts, n) => ts.isUnionTypeNode(n) && n.types.map((t) => t.getText()).sort().join("|") ===
  "Blob|File|string";

function describeType(ts, aliases, typeNode, depth) {
  let node = typeNode;
  if (ts.isParenthesizedTypeNode(node)) node = node.type;
  if (FILE_LIKE(ts, node)) return { type: "url" };
  if (ts.isUnionTypeNode(node)) {
    const parts = node.types.filter((t) => t.kind !== ts.SyntaxKind.NullKeyword &&
      !(ts.isLiteralTypeNode(t) && t.literal.kind === ts.SyntaxKind.NullKeyword));
    const nullable = parts.length !== node.types.length;
    const literals = parts.filter((t) => ts.isLiteralTypeNode(t));
    if (literals.length === parts.length && literals.length) {
      const values = literals.map((t) => JSON.parse(t.literal.getText().replace(/^'|'$/g, '"')));
      return { type: "enum", enum: values, ...(nullable ? { nullable } : {}) };
    }
    if (parts.length === 1) return { ...describeType(ts, aliases, parts[0], depth), ...(nullable ? { nullable } : {}) };
    return { type: "any", ts: node.getText().slice(0, 120) };
  }
  if (ts.isLiteralTypeNode(node)) return { type: "enum", enum: [JSON.parse(node.literal.getText().replace(/^'|'$/g, '"'))] };
  switch (node.kind) {
    case ts.SyntaxKind.StringKeyword: return { type: "string" };
    case ts.SyntaxKind.NumberKeyword: return { type: "number" };
    case ts.SyntaxKind.BooleanKeyword: return { type: "boolean" };
    default: break;
  }
  if (ts.isArrayTypeNode(node) || (ts.isTypeReferenceNode(node) && node.typeName.getText() === "Array")) {
    const item = ts.isArrayTypeNode(node) ? node.elementType : node.typeArguments[0];
    const d = describeType(ts, aliases, item, depth);
    return { type: "list", items: d };
  }
  if (ts.isTypeReferenceNode(node)) {
    const name = node.typeName.getText();
    const target = resolve(ts, aliases, node);
    if (target && target !== node && ts.isTypeLiteralNode(target) || (target && ts.isInterfaceDeclaration(target))) {
      const d = { type: "object", ref: name };
      // Objects are described one level deep: enough to recognise files and images.
      if (depth < 1) d.fields = objectFields(ts, aliases, node, depth + 1);
      return d;
    }
    if (target && target !== node) return describeType(ts, aliases, target, depth);
    return { type: "any", ts: name };
  }
  if (ts.isTypeLiteralNode(node)) return { type: "object", fields: depth < 1 ? objectFields(ts, aliases, node, depth + 1) : [] };
  return { type: "any", ts: node.getText().slice(0, 120) };
}

// ---------------------------------------------------------------------------
// fal-js JSON Schemas: { endpoint id: { field: {minimum, maximum, ...} } }

function readFalJsSchemas(ts, gitDir) {
  const git = (...a) => execFileSync("git", ["--git-dir", gitDir, ...a], { encoding: "utf8", maxBuffer: 1 << 30 });
  // The newest commit that still carries the generated schemas.
  const touching = git("log", "--all", "--format=%h", "--", "libs/schemas/src/image/endpoint-schema.ts")
    .trim().split("\n");
  const commit = touching.find((c) => {
    try { execFileSync("git", ["--git-dir", gitDir, "cat-file", "-e", `${c}:libs/schemas/src/image/endpoint-schema.ts`], { stdio: "ignore" }); return true; } catch { return false; }
  });
  const files = git("ls-tree", "-r", "--name-only", commit, "libs/schemas/src").split("\n");
  const byEndpoint = {};
  for (const dir of new Set(files.filter((f) => f.endsWith("/schemas.gen.ts")).map(path.dirname))) {
    const category = path.basename(dir);
    const schemas = new Map();
    const sf = ts.createSourceFile("s.ts", git("show", `${commit}:${dir}/schemas.gen.ts`), ts.ScriptTarget.Latest, true);
    for (const st of sf.statements) {
      if (!ts.isVariableStatement(st)) continue;
      for (const d of st.declarationList.declarations) {
        let init = d.initializer;
        if (init && ts.isAsExpression(init)) init = init.expression;
        if (init && ts.isObjectLiteralExpression(init)) schemas.set(d.name.text, literal(ts, init));
      }
    }
    const map = ts.createSourceFile("m.ts", git("show", `${commit}:${dir}/endpoint-schema.ts`), ts.ScriptTarget.Latest, true);
    ts.forEachChild(map, function visit(n) {
      if (ts.isPropertyAssignment(n) && ts.isStringLiteral(n.name) && ts.isObjectLiteralExpression(n.initializer)) {
        const input = n.initializer.properties.find((p) => p.name && p.name.getText() === "input");
        if (input && ts.isIdentifier(input.initializer)) {
          const schema = schemas.get(input.initializer.text.replace(/^z/, "") + "Schema");
          if (schema) byEndpoint[n.name.text] = { category, properties: schema.properties || {},
            order: schema["x-fal-order-properties"] || [] };
        }
        return;
      }
      ts.forEachChild(n, visit);
    });
  }
  return { byEndpoint, commit };
}

function literal(ts, node) {
  if (ts.isObjectLiteralExpression(node)) {
    const o = {};
    for (const p of node.properties) {
      if (!ts.isPropertyAssignment(p)) continue;
      const key = ts.isStringLiteral(p.name) ? p.name.text : p.name.getText();
      o[key] = literal(ts, p.initializer);
    }
    return o;
  }
  if (ts.isArrayLiteralExpression(node)) return node.elements.map((e) => literal(ts, e));
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return node.text;
  if (ts.isNumericLiteral(node)) return Number(node.text);
  if (ts.isPrefixUnaryExpression(node) && node.operator === ts.SyntaxKind.MinusToken) return -literal(ts, node.operand);
  if (node.kind === ts.SyntaxKind.TrueKeyword) return true;
  if (node.kind === ts.SyntaxKind.FalseKeyword) return false;
  if (node.kind === ts.SyntaxKind.NullKeyword) return null;
  return undefined;
}

// ---------------------------------------------------------------------------
// Which endpoints are image -> image, and their catalogue entry.

// An input carries images when its name says so and its value is a URL: fal types most
// as `string | Blob | File`, some as plain `string` (`image_urls: Array<string>`, `garment_image`).
const IMAGE_NAME = /image|mask|img|photo/i;

function imageKind(f) {
  // How an input field carries images: one URL, a list of URLs, or a mask URL.
  if (!IMAGE_NAME.test(f.name)) return null;
  const mask = /mask/i.test(f.name);
  if (f.type === "url" || (f.type === "string" && /(_url|^image|_image|mask|photo)$/.test(f.name))) {
    return mask ? "mask" : "url";
  }
  if (f.type === "list" && ["url", "string"].includes(f.items.type) && /(urls|images|masks)$/.test(f.name)) {
    return mask ? "masks" : "urls";
  }
  return null;
}

function isFile(d) {
  // An output value that is a file: an object with a url (fal's Image / ImageFile / File types).
  return d.type === "object" && (d.fields || []).some((x) => x.name === "url");
}

function outputImages(output) {
  // Where the result images are: an `images` list, else a single `image` (sometimes a list).
  const images = output.find((f) => f.name === "images" && f.type === "list" && isFile(f.items));
  if (images) return "images";
  const image = output.find((f) => f.name === "image" && (isFile(f) || (f.type === "list" && isFile(f.items))));
  return image ? "image" : null;
}

function titleOf(id) {
  const words = id.replace(/^fal-ai\//, "").split(/[/_-]/).filter(Boolean);
  return words.map((w) => (/^v\d/.test(w) ? w.toUpperCase() : w.charAt(0).toUpperCase() + w.slice(1))).join(" ");
}

function catalogueEntry(id, io, schema) {
  const imageFields = io.input.filter((f) => imageKind(f));
  const out = outputImages(io.output);
  if (!imageFields.length || !out) return null;
  const props = (schema && schema.properties) || {};
  const input = {};
  // fal's own field order (the one its playground shows) where published, else the types' order.
  const order = (schema && schema.order) || [];
  const rank = (f) => (order.includes(f.name) ? order.indexOf(f.name) : order.length);
  for (const f of [...io.input].sort((a, b) => rank(a) - rank(b))) {
    const e = { type: f.type };
    if (f.type === "list") e.items = f.items.type === "enum" ? { type: "enum", enum: f.items.enum } : { type: f.items.type };
    if (f.enum) e.enum = f.enum;
    if (f.nullable) e.nullable = true;
    const p = props[f.name] || {};
    // Defaults from the doc comments; fal's JSON Schema fills the ones the comments leave out.
    if (f.default !== undefined) e.default = f.default;
    else if (p.default !== undefined && p.default !== null) e.default = p.default;
    if (f.required) e.required = true;
    const kind = imageKind(f);
    if (kind) e.image = kind;
    const num = p.anyOf ? p.anyOf.find((x) => x.type === "number" || x.type === "integer") || p : p;
    if (f.type === "number" && num.type === "integer") e.type = "integer";
    for (const [from, to] of [["minimum", "min"], ["maximum", "max"], ["exclusiveMinimum", "gt"],
      ["exclusiveMaximum", "lt"], ["minLength", "min_length"], ["maxLength", "max_length"],
      ["minItems", "min_items"], ["maxItems", "max_items"]]) {
      const value = num[from] ?? p[from];
      if (typeof value === "number") e[to] = value;
    }
    if (f.description) e.description = f.description.length > 400 ? `${f.description.slice(0, 397)}...` : f.description;
    input[f.name] = e;
  }
  const output = { images: out };
  if (io.output.some((f) => f.name === "has_nsfw_concepts")) output.nsfw = "has_nsfw_concepts";
  output.fields = io.output.filter((f) => f.name !== out && f.name !== "has_nsfw_concepts").map((f) => f.name);
  return { title: titleOf(id), category: schema ? schema.category : null, input, output };
}

main();
