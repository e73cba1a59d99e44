"""Chat templates in the formats open models ship (written here after their published formats;
none has ``{% generation %}`` markers), for the tests of SFT masks and imported families."""

CHATML = ("{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
          "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
LLAMA3 = ("{{- bos_token }}{%- for m in messages %}{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
          " + m['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
GEMMA = ("{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set prefix = messages[0]['content'] + '\\n\\n' -%}"
         "{%- set turns = messages[1:] -%}{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
         "{%- for m in turns -%}{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
         "{{ '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + m['content'] | trim + '<end_of_turn>\\n' }}"
         "{%- endfor -%}{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}")
MISTRAL = ("{{- bos_token }}{%- for m in messages %}{%- if m['role'] == 'user' %}{{- '[INST] ' + m['content'] + '[/INST]' }}"
           "{%- elif m['role'] == 'assistant' %}{{- ' ' + m['content'] + eos_token }}{%- endif %}{%- endfor %}")
# Mistral's v0.3 template puts the system message into the *last* user turn: earlier renders differ
MISTRAL_SYSTEM_LAST = ("{{- bos_token }}{%- set sys = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
                       "{%- set turns = messages[1:] if sys else messages %}{%- for m in turns %}"
                       "{%- if m['role'] == 'user' %}{{- '[INST] ' + ((sys + '\\n\\n') if loop.last and sys else '') + "
                       "m['content'] + '[/INST]' }}{%- else %}{{- ' ' + m['content'] + eos_token }}{%- endif %}{%- endfor %}")
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
           "<bos>", "<start_of_turn>", "<end_of_turn>", "<s>", "</s>", "[INST]", "[/INST]"]
