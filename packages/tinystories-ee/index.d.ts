/** The bundled model's directory (config.json, model.safetensors, tokenizer files, model card), absolute, with a trailing separator. */
export declare const modelDir: string;
/** The eval stories file (TinyStories validation stories separated by lines `<|endoftext|>`), absolute. */
export declare const evalStoriesPath: string;
