"""The ten fal endpoints, as data.

Defaults and enum values are those of fal's API pages (the contract in
shared/seeds/fal-endpoints.txt); required-ness and ranges come from the schemas
fal generates from its OpenAPI (fal-js `libs/client/src/types/image/zod.gen.ts`).
Adding an endpoint is adding an entry here.
"""

from __future__ import annotations

from .spec import FAL_DEFAULT, MATCH_INPUT, SEED_MAX, Endpoint, Field, ImageLimits

ASPECT_RATIOS = ("21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21")
SAFETY_LEVELS = ("1", "2", "3", "4", "5", "6")
OUTPUT_FORMATS = ("jpeg", "png")


def seed_field(tooltip: str = "The same seed and inputs give the same image. Item i of a batch "
                              "uses seed + i. Set 'control after generate' to fixed so that a "
                              "rerun only pays for items that failed.") -> Field:
    return Field("seed", "seed", 0, tooltip, minimum=0, maximum=SEED_MAX)


def guidance(default: float, lo: float, hi: float, tooltip: str | None = None) -> Field:
    return Field("guidance_scale", "float", default,
                 tooltip or "How closely the result follows the prompt (classifier-free guidance).",
                 minimum=lo, maximum=hi, step=0.1)


def steps(default: int, lo: int = 1, hi: int = 50) -> Field:
    return Field("num_inference_steps", "int", default,
                 "Sampling steps: more is slower and often finer.", minimum=lo, maximum=hi)


def output_format() -> Field:
    return Field("output_format", "enum", "jpeg", "File format fal returns (png is lossless).",
                 choices=OUTPUT_FORMATS)


def safety_tolerance() -> Field:
    return Field("safety_tolerance", "enum", "2",
                 "Safety filter level: 1 is the strictest, 6 the most permissive.",
                 choices=SAFETY_LEVELS)


def optional_aspect_ratio() -> Field:
    return Field("aspect_ratio", "enum", FAL_DEFAULT,
                 "Aspect ratio of the result; 'fal default' lets fal keep the input's framing.",
                 choices=ASPECT_RATIOS)


def num_images(hi: int = 4) -> Field:
    return Field("num_images", "int", 1, "Images fal makes per input; every one is kept, in order.",
                 minimum=1, maximum=hi)


def prompt(default: str, tooltip: str, required: bool = True, **extra) -> Field:
    return Field("prompt", "text", default, tooltip, required=required, multiline=True, **extra)


def image_editing(endpoint: str, node: str, title: str, summary: str,
                  prompt_field: Field | None = None) -> Endpoint:
    """fal's four `image-editing/*` endpoints share one input schema."""
    fields = [prompt_field] if prompt_field else []
    fields += [guidance(3.5, 0, 20), steps(30), safety_tolerance(), output_format(),
               optional_aspect_ratio(), seed_field()]
    return Endpoint(f"fal-ai/image-editing/{endpoint}", node, title, summary, tuple(fields))


ENDPOINTS: tuple[Endpoint, ...] = (
    image_editing(
        "background-change", "FalBackgroundChange", "fal Background Change",
        "Replaces the background behind the subject with the one the prompt describes.",
        prompt("beach sunset with palm trees", "The background to put behind the subject.",
               required=False)),
    image_editing(
        "face-enhancement", "FalFaceEnhancement", "fal Face Enhancement",
        "Enhances faces while keeping a natural look."),
    image_editing(
        "color-correction", "FalColorCorrection", "fal Color Correction",
        "Corrects white balance, exposure and colour."),
    image_editing(
        "object-removal", "FalObjectRemoval", "fal Object Removal",
        "Removes the objects the prompt names and fills in what was behind them.",
        prompt("background people", "What to remove from the image.", required=False)),
    Endpoint(
        "fal-ai/post-processing/sharpen", "FalSharpen", "fal Sharpen",
        "Sharpens the image with a basic unsharp mask, smart (edge-aware) or CAS sharpening.",
        (
            Field("sharpen_mode", "enum", "basic",
                  "basic: unsharp mask (radius, alpha); smart: edge-aware (noise radius, "
                  "preserve edges, strength, ratio); cas: contrast-adaptive (amount).",
                  choices=("basic", "smart", "cas")),
            Field("sharpen_radius", "int", 1, "Sharpen radius (basic mode).", minimum=1, maximum=15),
            Field("sharpen_alpha", "float", 1.0, "Sharpen strength (basic mode).",
                  minimum=0.1, maximum=5.0, step=0.05),
            Field("noise_radius", "int", 7, "Noise radius (smart mode).", minimum=1, maximum=25),
            Field("preserve_edges", "float", 0.75, "Edge preservation factor (smart mode).",
                  minimum=0.0, maximum=1.0, step=0.05),
            Field("smart_sharpen_strength", "float", 5.0, "Sharpen strength (smart mode).",
                  minimum=0.0, maximum=25.0, step=0.1),
            Field("smart_sharpen_ratio", "float", 0.5, "Blend ratio (smart mode).",
                  minimum=0.0, maximum=1.0, step=0.05),
            Field("cas_amount", "float", 0.8, "Sharpening amount (cas mode).",
                  minimum=0.0, maximum=1.0, step=0.05),
        ),
        supports_sync_mode=False,
    ),
    Endpoint(
        "fal-ai/flux/dev/image-to-image", "FalFluxDevImageToImage", "fal FLUX.1 [dev] Image to Image",
        "Redraws the image with FLUX.1 [dev] following the prompt.",
        (
            prompt("a cat dressed as a wizard with a background of a mystic forest.",
                   "What the new image should show."),
            Field("strength", "float", 0.95,
                  "How much the image may change: 0 keeps it, 1 redraws it.",
                  minimum=0.01, maximum=1.0, step=0.01),
            steps(40, 10, 50),
            guidance(3.5, 1, 20),
            num_images(4),
            Field("enable_safety_checker", "bool", True,
                  "Let fal flag unsafe results (flagged items follow the NSFW policy in fal Settings)."),
            output_format(),
            Field("acceleration", "enum", "none", "Faster generation at some cost in quality.",
                  choices=("none", "regular", "high")),
            seed_field(),
        ),
        nsfw_field="has_nsfw_concepts",
    ),
    Endpoint(
        "fal-ai/recraft/v3/image-to-image", "FalRecraftV3ImageToImage", "fal Recraft V3 Image to Image",
        "Restyles the image with Recraft V3 following the prompt, style and colour palette.",
        (
            prompt("winter", "A description of the areas to change.", max_length=1000),
            Field("strength", "float", 0.5,
                  "Difference from the input: 0 is almost identical, 1 is barely similar.",
                  minimum=0.0, maximum=1.0, step=0.01),
            Field("style", "enum", "realistic_image",
                  "Style of the result; vector styles cost twice as much.", choices=(
                      "any", "realistic_image", "digital_illustration", "vector_illustration",
                      "realistic_image/b_and_w", "realistic_image/hard_flash", "realistic_image/hdr",
                      "realistic_image/natural_light", "realistic_image/studio_portrait",
                      "realistic_image/enterprise", "realistic_image/motion_blur",
                      "realistic_image/evening_light", "realistic_image/faded_nostalgia",
                      "realistic_image/forest_life", "realistic_image/mystic_naturalism",
                      "realistic_image/natural_tones", "realistic_image/organic_calm",
                      "realistic_image/real_life_glow", "realistic_image/retro_realism",
                      "realistic_image/retro_snapshot", "realistic_image/urban_drama",
                      "realistic_image/village_realism", "realistic_image/warm_folk",
                      "digital_illustration/pixel_art", "digital_illustration/hand_drawn",
                      "digital_illustration/grain", "digital_illustration/infantile_sketch",
                      "digital_illustration/2d_art_poster", "digital_illustration/handmade_3d",
                      "digital_illustration/hand_drawn_outline",
                      "digital_illustration/engraving_color", "digital_illustration/2d_art_poster_2",
                      "digital_illustration/antiquarian", "digital_illustration/bold_fantasy",
                      "digital_illustration/child_book", "digital_illustration/child_books",
                      "digital_illustration/cover", "digital_illustration/crosshatch",
                      "digital_illustration/digital_engraving", "digital_illustration/expressionism",
                      "digital_illustration/freehand_details", "digital_illustration/grain_20",
                      "digital_illustration/graphic_intensity", "digital_illustration/hard_comics",
                      "digital_illustration/long_shadow", "digital_illustration/modern_folk",
                      "digital_illustration/multicolor", "digital_illustration/neon_calm",
                      "digital_illustration/noir", "digital_illustration/nostalgic_pastel",
                      "digital_illustration/outline_details", "digital_illustration/pastel_gradient",
                      "digital_illustration/pastel_sketch", "digital_illustration/pop_art",
                      "digital_illustration/pop_renaissance", "digital_illustration/street_art",
                      "digital_illustration/tablet_sketch", "digital_illustration/urban_glow",
                      "digital_illustration/urban_sketching", "digital_illustration/vanilla_dreams",
                      "digital_illustration/young_adult_book",
                      "digital_illustration/young_adult_book_2",
                      "vector_illustration/bold_stroke", "vector_illustration/chemistry",
                      "vector_illustration/colored_stencil", "vector_illustration/contour_pop_art",
                      "vector_illustration/cosmics", "vector_illustration/cutout",
                      "vector_illustration/depressive", "vector_illustration/editorial",
                      "vector_illustration/emotional_flat", "vector_illustration/infographical",
                      "vector_illustration/marker_outline", "vector_illustration/mosaic",
                      "vector_illustration/naivector", "vector_illustration/roundish_flat",
                      "vector_illustration/segmented_colors", "vector_illustration/sharp_contrast",
                      "vector_illustration/thin", "vector_illustration/vector_photo",
                      "vector_illustration/vivid_shapes", "vector_illustration/engraving",
                      "vector_illustration/line_art", "vector_illustration/line_circuit",
                      "vector_illustration/linocut")),
            Field("colors", "colors", "",
                  "Preferred colours as #rrggbb separated by commas, e.g. #ff8800, #223344; "
                  "empty sends none."),
            Field("style_id", "text", "", "ID of a custom style reference; empty sends none."),
            Field("negative_prompt", "text", "",
                  "What the image should not contain; empty sends none.", multiline=True,
                  max_length=1000),
        ),
        # Recraft's page: under 5 MB, under 16 MP, max dimension under 4096 px. "5 MB" may be
        # 5,000,000 bytes or 5 MiB: stay under both.
        limits=ImageLimits(max_side=4095, max_pixels=16_000_000 - 1,
                           max_bytes=min(5_000_000, 5 * 1024 * 1024) - 1),
    ),
    Endpoint(
        "fal-ai/luma-photon/modify", "FalLumaPhotonModify", "fal Luma Photon Modify",
        "Modifies and reframes the image with Luma Photon following the prompt.",
        (
            prompt("Make the image look like a painting", "How to modify the image (3 to 5000 "
                   "characters; empty sends none).", required=False, min_length=3, max_length=5000),
            Field("strength", "float", 0.8,
                  "Influence of the input image: higher keeps more of it.",
                  required=True, minimum=0.0, maximum=1.0, step=0.01),
            Field("aspect_ratio", "enum", MATCH_INPUT,
                  "Aspect ratio of the result; 'match input' picks the ratio closest to the "
                  "input image.", required=True,
                  choices=("1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"),
                  derived_choices=(MATCH_INPUT,)),
        ),
        supports_sync_mode=False,
    ),
    Endpoint(
        "fal-ai/bytedance/seededit/v3/edit-image", "FalSeedEditV3", "fal SeedEdit 3.0 Edit Image",
        "Edits the image with ByteDance SeedEdit 3.0 following an instruction.",
        (
            prompt("Make it a realistic, highly detailed photograph with a winter wonderland "
                   "background. Then give her a bowler hat.", "The edit to make, as an instruction."),
            guidance(0.5, 0.0, 1.0, "How closely the result follows the prompt (0 to 1)."),
            seed_field(),
            Field("enable_safety_checker", "bool", True,
                  "Let fal's safety checker screen the result."),
        ),
        output_field="image",
    ),
    Endpoint(
        "fal-ai/flux-pro/kontext/max/multi", "FalFluxKontextMaxMulti", "fal FLUX.1 Kontext [max] Multi",
        "Combines and edits several reference images with FLUX.1 Kontext [max] following the prompt.",
        (
            prompt("Put the little duckling on top of the woman's t-shirt.",
                   "How to combine or edit the reference images."),
            guidance(3.5, 1, 20),
            num_images(4),
            output_format(),
            safety_tolerance(),
            optional_aspect_ratio(),
            seed_field(),
            Field("enhance_prompt", "bool", False,
                  "Let fal rewrite the prompt for better results before generating."),
        ),
        image_field="image_urls",
        multi_image_sockets=4,
        nsfw_field="has_nsfw_concepts",
    ),
)

BY_NODE = {e.node_name: e for e in ENDPOINTS}
BY_ENDPOINT = {e.endpoint_id: e for e in ENDPOINTS}
