/* The model, converted on the host at build time, placed in flash (.rodata) at a
 * 64-byte boundary: the engine reads it in place. MOE_FIRMWARE_MODEL is its path. */
#define STR2(x) #x
#define STR(x) STR2(x)
    .section .rodata.moe_model, "a"
    .balign 64
    .global moe_model_data
moe_model_data:
    .incbin STR(MOE_FIRMWARE_MODEL)
moe_model_end:
    .balign 4
    .global moe_model_size
moe_model_size:
    .word moe_model_end - moe_model_data
